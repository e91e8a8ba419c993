// Each code path of the gather-reduce kernel (portable, AVX2, AVX-512) over the same random rows
// of a table in huge-page memory, alternating in one process, so that this VM's drift between
// runs does not decide the comparison. Built and run by Tools/kernel_paths.sh.
//     kernel_paths LOG2_ROWS        (64 bf16 values per row, bags of 128 rows, 256 bags a call)
#define _GNU_SOURCE
#include "gather_kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  if(argc!=2){fprintf(stderr,"usage: kernel_paths LOG2_ROWS\n");return 2;}
  size_t rows=1ull<<atoi(argv[1]), bytes=rows*128; uint16_t*t=mmap(0,bytes,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0); madvise(t,bytes,MADV_HUGEPAGE);
  for(size_t i=0;i<rows*64;i++) t[i]=0x3F80|(i&0x7F);
  size_t q=256, per=128, n=q*per, passes=16; const void**rp=malloc(n*passes*sizeof(void*)); intptr_t*tg=malloc(n*sizeof(intptr_t)); float*w=malloc(n*4),*out=malloc(q*64*4);
  uint64_t s=88172645463325252ull; for(size_t i=0;i<n*passes;i++){s^=s<<13;s^=s>>7;s^=s<<17; rp[i]=t+(s%rows)*64;} for(size_t i=0;i<n;i++){tg[i]=i/per; w[i]=1.0f/(i%7+1);}
  double res[3][15];
  for(int p=0;p<15;p++) for(int lv=0;lv<3;lv++){ double t0=now(); for(size_t b=0;b<passes;b++){ for(size_t i=0;i<q*64;i++) out[i]=0; pkm_gather_reduce_at(lv,3,rp+b*n,NULL,n,64,1,w,tg,out,32,NULL);} res[lv][p]=n*passes/(now()-t0)/1e6; }
  const char*nm[]={"portable","avx2","avx512"};
  for(int lv=0;lv<3;lv++){qsort(res[lv],15,sizeof(double),cmp); printf("2^%s %-8s median %.1f max %.1f M rows/s\n",argv[1],nm[lv],res[lv][7],res[lv][14]);}
}
